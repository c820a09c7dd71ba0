# Sourced by make/* and launchers: machine config (optional) with defaults.
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$_here/_env/machine_config.bashrc" ] && source "$_here/_env/machine_config.bashrc"
export PROJECT_DN="${PROJECT_DN:-$_here}"
export MACHINE_NAME="${MACHINE_NAME:-$(hostname)}"
export LUSTROUS_DATA_ROOT="${LUSTROUS_DATA_ROOT:-$PROJECT_DN/_data/lustrous}"
export PYTHONPATH="$PROJECT_DN${PYTHONPATH:+:$PYTHONPATH}"
unset _here

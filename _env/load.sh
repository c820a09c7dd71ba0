# Sourced by make/* and launchers (and by hand: `source _env/load.sh`): machine config (optional) with
# defaults, PYTHONPATH, and the project's virtual environment .venv (made by make/setup) when present
# and no other one is active, so that `python -m _scripts...` finds torch.
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$_here/_env/machine_config.bashrc" ] && source "$_here/_env/machine_config.bashrc"
export PROJECT_DN="${PROJECT_DN:-$_here}"
export MACHINE_NAME="${MACHINE_NAME:-$(hostname)}"
export LUSTROUS_DATA_ROOT="${LUSTROUS_DATA_ROOT:-$PROJECT_DN/_data/lustrous}"
export PYTHONPATH="$PROJECT_DN${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    for _venv in "$PROJECT_DN/.venv" "$_here/.venv"; do
        if [ -x "$_venv/bin/python" ]; then
            export VIRTUAL_ENV="$(cd "$_venv" && pwd)"
            export PATH="$VIRTUAL_ENV/bin:$PATH"
            hash -r 2>/dev/null
            break
        fi
    done
    unset _venv
fi
unset _here

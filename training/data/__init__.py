"""Character files to training samples: loaders and posing (``assets``), procedural characters (``synth``),
the ground-truth rasteriser (``raster``) and the render job (``render``), a rendered set's metadata and ids
(``catalog``), cleaning and splits (``clean``), foreground masks (``masks``) and precomputed encoder
features (``features``).  The training sample itself is ``training.dataset``."""

"""The toolkit's library, imported by the thin scripts of ``_scripts/`` and ``_train/``.

The networks keep EG3D's module names at the top (``training.triplane.TriPlaneGenerator_v1``,
``training.dual_discriminator``, ``training.networks_stylegan2``, ``training.superresolution``,
``training.volumetric_rendering``, with ``encoders``, ``fusion`` and ``triplane_triton``), beside what
training reads and runs (``dataset``, ``loss``, ``training_loop``) and what every part shares (``cameras``,
``paths``, ``errors``, ``jobs``, ``images``, ``configs``, ``checkpoint``).  Each other concern has its
subpackage:

- ``training.data``: character files, procedural characters, rendering, cleaning, masks, features;
- ``training.run``: the training step and what a run needs around the loop;
- ``training.eval``: metrics, generate and measure;
- ``training.infer``: artwork to a 3D character (meshes, textures, the released models).

docs/DESIGN.md has the module map and the conventions.
"""

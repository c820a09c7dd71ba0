"""From artwork to a 3D character with a trained model: preparing the input images (``artwork``), the
released models (``release``), meshes from the field (``meshing``), front pasting (``front_paste``), UV
textures (``texture``) and the one reconstruction pipeline behind ``_scripts.infer`` and the web demo
(``reconstruct``)."""

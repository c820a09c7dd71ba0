"""3D characters in: loaders (VRM / glTF / OBJ), posing and framing."""

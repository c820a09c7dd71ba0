"""What a training run needs around its loop (``training.training_loop``): the step itself
(``train_step``), several processes (``distributed``), torch.compile and its cache (``compiler``), the run
folder and snapshots (``snapshots``), start-up checks (``config_check``) and the memory estimate
(``memory``)."""

"""The example project's command line: the main job (``check``) and the live failure demo."""

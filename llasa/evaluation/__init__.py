"""Evaluation: comparing systems on a test list (`compare`, with Seed-TTS-eval's protocol in `seedtts` and the
systems' synthesis in `systems`), a run's training curves (`curves`) and where its step time went (`profiling`)."""

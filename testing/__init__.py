"""Test support shared by the tests, the CPU demo and the benchmarks: tiny random-weight checkpoints of every model
the project loads (Llasa, XCodec2 in both layouts, Whisper in three formats, WavLM, a Qwen2-Audio judge), built and
saved to disk so that the real loading code reads them."""

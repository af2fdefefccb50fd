"""seq2seq: recurrent encoder-decoders for NL -> Python code, translation and text-to-text tasks."""

__version__ = "0.1.0"

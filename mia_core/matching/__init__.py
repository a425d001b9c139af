"""Pure numpy measures every step may import (a base module: it imports no file format and no step):
``tokens`` compares generated tokens with true suffixes (exact, matched length, edit distance, BLEU,
memorized spans, the k convention); ``probabilistic`` is (n, p)-discoverable extraction."""

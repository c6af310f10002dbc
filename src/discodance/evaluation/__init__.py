"""How good and how costly a trained model is: likelihood bounds (likelihood.py), metric primitives
(stats.py), motion features (motion.py), the dataset's evaluation network (evalnet.py), the full
evaluation of `evaluate --full` and `compare` (full.py) and the compare report (report.py)."""

"""Distillation: the teacher (teacher.py: a finished run or an ensemble, its logits averaged), the teacher's
top-k logits cached on disk (cache.py), and data sampled from a teacher for sequence-level distillation
(sample.py). The student trains with megarecipe.train and an objective from megarecipe.train.objectives."""

"""megarecipe: data-constrained pre-training recipe."""

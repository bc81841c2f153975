"""Scores computed from predictions: per-class AUROC with patient-level bootstrap CIs and paired comparisons
(`auroc`)."""

"""Uncertainty quality: metrics, temperature calibration folded into packages, and reports."""

"""Analysis of trained models: evaluation, TTA, inference, export, explanations, label audits, reports."""

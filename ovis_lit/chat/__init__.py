"""Talking to a checkpoint: the chat CLI (chat.py), its batch mode, and the web demo (demo.py). Everything goes
through evaluation's `generate_answers`, so answers are those evals/run.py would give for the same prompt."""

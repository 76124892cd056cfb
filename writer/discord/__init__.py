"""The Discord bot: another face of the writer, with its prompt templates, post-processing
and billing. Discord I/O lives in bot.py; everything it decides is in services.py,
selectors.py and jobs.py, which know nothing of Discord."""

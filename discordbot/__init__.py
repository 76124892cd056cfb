"""The Discord bot: a product of its own on the marketplace, with commands, slash commands,
conversations and its own billing. Discord I/O lives in bot.py; everything it decides is in
services.py, selectors.py and jobs.py, which know nothing of Discord."""

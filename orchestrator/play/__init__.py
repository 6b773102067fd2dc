"""Games, agents, search and the self-play loop (pure Python over OpenSpiel; no Ray, no aiohttp)."""

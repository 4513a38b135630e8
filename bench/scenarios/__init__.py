"""One module per scenario, each with ``async def run(context: Context) -> Scenario``."""

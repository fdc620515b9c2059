"""The web console and admin API: one aiohttp process (``inflow console``, started by ``inflow up``).

It sits in the CLI layer: every operation calls the same function the ``inflow`` commands call.
"""

"""A demo program with realistic traffic and planted fraud (`refguard demo`).

- `scenario`: the traffic, as pure data: people, clicks, conversions, planted fraud patterns;
- `moments`: the growth history, as pure data: a customer base, their events, advocates who
  refer, shares and channel links;
- `client`: the server's HTTP API, its redirect (live clicks) and the wait for their flush;
- `build`: the steps that build the program through the API and the click import;
- `growth`: candidates, asks, their webhooks to the demo's own receiver, shares after asks;
- `report`: the outcome per pattern and the printed report;
- `serve`: the command: a server started for the demo when none answers, and stopped.

Nothing is imported here: the command line imports these lazily, so `refguard --help` stays
fast.
"""

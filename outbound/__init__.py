"""Requests to URLs that someone else chose (a user's webhook): where they may point, and
how we send them.

The ground: it imports nothing of ours but Django's settings, so anything may use it.
`outbound.policy` says whether a URL may be fetched and which addresses it may reach;
`outbound.http` sends a request to exactly those addresses.
"""

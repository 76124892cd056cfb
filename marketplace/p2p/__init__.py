"""Discovery of hosts over libp2p: a Kademlia DHT of providers per model, signed host
records, gossipsub for live changes, the on-chain registry as the gate (docs/discovery.md)."""

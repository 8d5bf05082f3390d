"""The local stack: Apache Kafka (one KRaft node or three) and a throwaway PostgreSQL cluster, no
Docker
(docs/design.md, Local stack)."""

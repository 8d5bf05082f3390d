"""The local stack: a Tansu broker and a throwaway PostgreSQL cluster, no Docker
(docs/design.md, Local stack)."""

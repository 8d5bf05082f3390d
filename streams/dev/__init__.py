"""The local stack: a Tansu broker and a throwaway PostgreSQL cluster, no Docker (DESIGN.md 6)."""

"""The harness, outside the product: ``streams lab bench``, ``chaos`` and ``demo``, the workload
generator and the workload checker. The pipeline's own modules never import it
(docs/design.md, Layout)."""

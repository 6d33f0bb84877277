"""segkit inside other tools: CVAT's auto-annotation (``segkit.integrations.cvat``)."""

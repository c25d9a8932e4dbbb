"""cluster.toml as Kubernetes manifests (``corral export k8s``): pure functions from a
``ClusterConfig`` to plain dicts and their YAML text; nothing here talks to a cluster."""

"""The Kubernetes runner: the objects of a workflow group, how they are created and watched."""

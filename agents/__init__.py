"""Ready-made agents for procgraph: cameras, classifiers, PLC writers, HMI."""

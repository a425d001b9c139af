"""Set-level tests (pipeline step): dataset inference (``mia dataset-inference``) and test-set
contamination (``mia contamination``). ``dataset_inference`` and ``contamination`` are pure statistics;
``run`` computes their inputs with a scoring backend (the attack's signals, log-likelihoods of orders)."""

"""Set-level tests (pipeline step): dataset inference (``mia dataset-inference``) and test-set
contamination (``mia contamination``). ``dataset_inference`` and ``contamination`` are pure statistics;
``run`` computes their inputs with a scoring backend (the attack's signals, log-likelihoods of orders),
``workflow`` goes from a request to a results file."""

#: the level of the verdict line of both tests (the p-value is printed whatever it is)
DEFAULT_ALPHA = 0.05

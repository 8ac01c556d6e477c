"""Zero-shot evaluation: encoding, exact search and the LAReQA retrieval metrics."""

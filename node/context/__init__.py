"""The patient's context for a study: the order, laboratory results, prior studies and an ECG, chosen by
the task's policy (its routing rules' ``context``), gathered from the node's own store and the PACS, and put in
the model's prompt in plain clinical language."""

"""A DICOMweb archive as the node's peer: the HTTP client (auth, TLS, timeouts), the multipart bodies and the
PS3.18 answers that STOW-RS delivery (``node/egress/dicomweb.py``) and priors by QIDO-RS/WADO-RS
(``node/context/dicomweb.py``) share."""

"""The STOW-RS receiver (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]``, multipart/related bodies of
application/dicom parts parsed as they stream in, each part stored through the C-STORE path
(:class:`node.ingest.receiver.Receiver`), answered with the Store Instances Response Module."""

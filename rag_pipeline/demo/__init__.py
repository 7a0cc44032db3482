"""The demo corpus: documents, images and gold queries the project generates for itself."""

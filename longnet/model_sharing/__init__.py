"""Sharing trained models as zip files in nnU-Net's layout, so a zip moves between longnet and nnU-Net installs."""

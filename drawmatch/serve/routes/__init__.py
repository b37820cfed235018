"""The workbench's routes, one router per concern: signing in (`auth`), browsing drawings and
artworks (`browse`), deciding pairs and the review queue (`review`), searching by an uploaded
image (`upload`) and the images themselves (`images`)."""

"""Video: a generated test clip, frames worth labelling, tracked and smoothed poses, outlier frames."""

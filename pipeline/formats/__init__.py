"""Readers and writers at the COCO and YOLO-pose edges of the dataset hub (Label Studio has its own
package, :mod:`pipeline.labelstudio`)."""

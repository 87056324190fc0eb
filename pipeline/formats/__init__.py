"""Readers and writers at the edges of the dataset hub (Label Studio, COCO, YOLO-pose)."""

"""Face analysis: detection, alignment, dense landmarks, masks, pose, recognisers."""

from refacex.faces.analysis import FaceAnalyzer
from refacex.faces.recognizers import RECOGNIZERS, Recognizer, get_recognizer
from refacex.faces.types import Face, Pose

__all__ = ["RECOGNIZERS", "Face", "FaceAnalyzer", "Pose", "Recognizer", "get_recognizer"]

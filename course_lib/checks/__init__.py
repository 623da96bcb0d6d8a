"""Exercise checkers: ``course_lib.checks.check_...(your_answer)`` shows a pass, a specific hint, or
"not done yet", and never raises because of your code. One module per lesson."""
from ._harness import CheckResult, Hint, NotDone, call_learner, checker, compare, expect_tensor, is_close

__all__ = ["CheckResult", "Hint", "NotDone", "call_learner", "checker", "compare", "expect_tensor", "is_close"]

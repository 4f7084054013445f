package proxy

// rank orders final responses for the one the caller gets (RFC 3261 §16.7
// step 6), lower is better: a 6xx ends everything; then the lowest class;
// within 4xx, a definite answer (486 Busy, 404, 403...) beats "no answer"
// (408, 480) so a busy phone is not reported as unreachable because another
// contact timed out; 5xx after that; 0 (nothing yet) last.
func rank(code int) int {
	switch {
	case code >= 600 && code < 700:
		return 0
	case code >= 300 && code < 400:
		return 1
	case code == 408 || code == 430 || code == 480: // 430 Flow Failed: that flow is gone (RFC 5626)
		return 3
	case code >= 400 && code < 500:
		return 2
	case code >= 500 && code < 600:
		return 4
	default:
		return 5
	}
}

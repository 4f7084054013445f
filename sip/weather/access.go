package weather

import "strings"

// Access types, as AccessType names them.
const (
	AccessLTE     = "lte"
	AccessNR      = "nr"
	Access3G      = "3g"
	Access2G      = "2g"
	AccessWiFi    = "wifi"
	AccessUnknown = "unknown"
)

// AccessType names the access type of a P-Access-Network-Info value by its
// access-type token (RFC 7315 §5.4, 3GPP TS 24.229 §7.2A.4):
//
//	3GPP-E-UTRAN-FDD, 3GPP-E-UTRAN-TDD (and other 3GPP-E-UTRAN-*)  lte
//	3GPP-NR-FDD, 3GPP-NR-TDD, 3GPP-NR (and other 3GPP-NR-*)         nr
//	3GPP-UTRAN-FDD, 3GPP-UTRAN-TDD                                  3g
//	3GPP-GERAN                                                      2g
//	IEEE-802.11, IEEE-802.11a, -b, -g, -n, -ac, ...                 wifi
//	anything else, or no header                                     unknown
//
// GERAN is GSM/EDGE, a second-generation radio whose packet data behaves
// unlike UMTS's, so it is kept apart from 3g rather than hidden in it.
// Tokens are compared without regard to case; of several header values
// (comma separated) the first is the phone's current access.
func AccessType(pani string) string {
	first, _, _ := strings.Cut(pani, ",")
	token, _, _ := strings.Cut(first, ";")
	token = strings.ToUpper(strings.TrimSpace(token))
	switch {
	case token == "":
		return AccessUnknown
	case strings.HasPrefix(token, "3GPP-E-UTRAN"):
		return AccessLTE
	case token == "3GPP-NR" || strings.HasPrefix(token, "3GPP-NR-"):
		return AccessNR
	case token == "3GPP-UTRAN-FDD" || token == "3GPP-UTRAN-TDD":
		return Access3G
	case token == "3GPP-GERAN":
		return Access2G
	case strings.HasPrefix(token, "IEEE-802.11"):
		return AccessWiFi
	}
	return AccessUnknown
}

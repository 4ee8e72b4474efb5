package tun

import "errors"

// ErrRouteExists is wrapped by AddRoute's error when the prefix already has
// a route that AddRoute would have to replace: drover never routes over a
// route it did not install (the bridge's or the underlay's connected route,
// an operator's static route), so that no member's claim can take over a
// prefix this host reaches otherwise, and removing drover's routes always
// leaves what was there before.
var ErrRouteExists = errors.New("tun: a route for the prefix already exists")

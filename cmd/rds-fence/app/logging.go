package app

import (
	"flag"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2/textlogger"
)

// logFlags adds -v to fs and returns a constructor for the logger.
func logFlags(fs *flag.FlagSet) func() logr.Logger {
	v := fs.Int("v", 0, "log verbosity (2: every gRPC call, 4: every RDS command)")
	return func() logr.Logger {
		return textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(*v)))
	}
}

package csi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-fence/rds-fence/rds"
)

// toStatus maps an inner error to its gRPC status: the one place where
// storage errors become codes. A status error passes through unchanged.
func toStatus(err error, msg string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, rds.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, rds.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, rds.ErrOutOfSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, rds.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, rds.ErrUnreachable):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Errorf(code, "%s: %v", msg, err)
}

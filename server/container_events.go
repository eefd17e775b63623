package server

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// GetContainerEvents streams container and sandbox lifecycle events until
// the client goes away, or until it falls so far behind that it is dropped.
func (s *RuntimeService) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	sub, cancel := s.events.subscribe()
	defer cancel()
	ctx := stream.Context()
	for {
		select {
		case ev := <-sub.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.dropped:
			return errdefs.Newf(errdefs.ErrResourceExhausted, "event subscriber fell %d events behind and was dropped", eventBufferSize)
		case <-ctx.Done():
			return nil
		}
	}
}

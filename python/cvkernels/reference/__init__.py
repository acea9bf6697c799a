"""Plain NumPy references: the specification every kernel is judged against.

Each operator ``<op>`` has ``<op>_forward`` (torch.nn.functional / torchvision.ops signature),
``<op>`` as an alias of the forward, and ``<op>_backward(grad_out, <saved inputs>, <params>)``
returning the gradients of the differentiable inputs as a tuple. Inputs of any float dtype are
accepted and the output keeps that dtype; pass float64 for an oracle.
"""
from .matmul import *      # noqa: F401,F403
from .softmax import *     # noqa: F401,F403
from .conv import *        # noqa: F401,F403
from .pool import *        # noqa: F401,F403
from .norm import *        # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .loss import *        # noqa: F401,F403
from .attention import *   # noqa: F401,F403
from .boxes import *       # noqa: F401,F403
from .roi import *         # noqa: F401,F403
from .pad import *         # noqa: F401,F403
from .group_norm import *  # noqa: F401,F403
from .mha import *         # noqa: F401,F403
